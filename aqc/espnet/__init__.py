"""ESPnet plug-ins of aqc (the SSL task, the ASR frontend)."""
