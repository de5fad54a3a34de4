"""ESPnet plug-ins of aqc (the SSL task, the ASR frontend).

Importing this package first makes ESPnet's own import faster: its ``@typechecked`` functions are
instrumented from a disk cache (:mod:`aqc.espnet.typeguard_cache`).
"""
from .typeguard_cache import install as _install_typeguard_cache

_install_typeguard_cache()
