"""One-file archives of trained models, as ESPnet's ``asr.sh`` packs them (stages 14-16), and their reading.

An archive is a zip holding ``meta.yaml`` (``format``, ``kind``: ``asr`` or ``ssl``, and the role of each
file), the model, its ``config.yaml``, the token list (and BPE model), ``RESULTS.md`` and the training
curves (``images/*.png``); a token list or BPE model the config names as a file is packed and the config
pointed at the copy (ESPnet's own config.yaml holds the tokens themselves). :func:`unpack` extracts it
beside itself (``<name>.unpacked/``, once) and points the config at the extracted files, so ``aqc.bin.asr_inference --model_archive X.zip`` and
``aqc.api.load_model(X.zip)`` read it directly. Model files inside are read with aqc's safe loader like
any other; an archive member whose name leaves the folder is refused.
"""
from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Dict, Optional, Union

import yaml

FORMAT = "aqc-pack-1"
PathLike = Union[str, os.PathLike]


class ArchiveError(ValueError):
    pass


def _add(zf: zipfile.ZipFile, path: Path, name: str, files: Dict[str, str], role: Optional[str] = None) -> None:
    zf.write(path, name)
    if role:
        files[role] = name


def pack(out: PathLike, kind: str, model_file: PathLike, config: PathLike, results: Optional[PathLike] = None,
         images: Optional[PathLike] = None) -> Path:
    """Write an archive of a fine-tuned (``kind="asr"``) or pre-trained (``"ssl"``) model."""
    if kind not in ("asr", "ssl"):
        raise ArchiveError(f"kind {kind!r}: expected asr or ssl")
    out, model_file, config = Path(out), Path(model_file), Path(config)
    for path in (model_file, config):
        if not path.is_file():
            raise ArchiveError(f"{path} not found: nothing to pack")
    with open(config, encoding="utf-8") as f:
        conf = yaml.safe_load(f) or {}
    if kind == "asr" and not isinstance(conf.get("token_list"), (str, list)):
        raise ArchiveError(f"{config} has no token_list: not the config of an ESPnet ASR experiment")
    files: Dict[str, str] = {}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        _add(zf, model_file.resolve(), "model.pth", files, "model_file")
        for key, name in (("token_list", "tokens.txt"), ("bpemodel", "bpe.model")):
            value = conf.get(key)
            if isinstance(value, str):
                if not Path(value).is_file():
                    raise ArchiveError(f"{config}: {key} {value} not found (run from the recipe directory)")
                _add(zf, Path(value), name, files, key)
                conf[key] = name
        zf.writestr("config.yaml", yaml.safe_dump(conf, sort_keys=False, allow_unicode=True))
        files["config"] = "config.yaml"
        if results is not None and Path(results).is_file():
            _add(zf, Path(results), "RESULTS.md", files, "results")
        if images is not None and Path(images).is_dir():
            for png in sorted(Path(images).glob("*.png")):
                zf.write(png, f"images/{png.name}")
        meta = {"format": FORMAT, "kind": kind, "files": files}
        zf.writestr("meta.yaml", yaml.safe_dump(meta, sort_keys=False))
    os.replace(tmp, out)
    return out


def _safe_members(zf: zipfile.ZipFile, archive: Path):
    for info in zf.infolist():
        name = info.filename
        if name.startswith("/") or ".." in Path(name).parts or "\\" in name:
            raise ArchiveError(f"{archive}: member {name!r} would be written outside the folder; refused")
        yield info


def read_meta(archive: PathLike) -> Dict:
    archive = Path(archive)
    if not zipfile.is_zipfile(archive):
        raise ArchiveError(f"{archive} is not a zip archive made by aqc.bin.pack")
    with zipfile.ZipFile(archive) as zf:
        try:
            meta = yaml.safe_load(zf.read("meta.yaml"))
        except KeyError:
            raise ArchiveError(f"{archive} has no meta.yaml: not an archive made by aqc.bin.pack") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ArchiveError(f"{archive}: meta.yaml format {meta.get('format') if isinstance(meta, dict) else meta!r}, "
                           f"expected {FORMAT}")
    return meta


def unpack(archive: PathLike, into: Optional[PathLike] = None) -> Dict[str, Path]:
    """Extract (once) and return the absolute path of each file role (``model_file``, ``config``, ...)."""
    archive = Path(archive).resolve()
    meta = read_meta(archive)
    target = Path(into) if into is not None else archive.with_name(archive.name + ".unpacked")
    stamp = target / ".unpacked_from"
    signature = f"{archive} {archive.stat().st_size} {archive.stat().st_mtime_ns}\n"
    if not (stamp.is_file() and stamp.read_text() == signature):
        target.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(target, members=list(_safe_members(zf, archive)))
        config = target / meta["files"]["config"]
        with open(config, encoding="utf-8") as f:
            conf = yaml.safe_load(f) or {}
        for key in ("token_list", "bpemodel"):
            if key in meta["files"]:
                conf[key] = str((target / meta["files"][key]).resolve())
        config.write_text(yaml.safe_dump(conf, sort_keys=False, allow_unicode=True), encoding="utf-8")
        stamp.write_text(signature)
    paths = {role: (target / name).resolve() for role, name in meta["files"].items()}
    paths["kind"] = meta["kind"]  # type: ignore[assignment]
    return paths
