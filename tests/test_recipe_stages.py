"""The shared stage script's bookkeeping: markers only after success, finished stages skipped (issue 9)."""
import os
import subprocess
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / "egs" / "TEMPLATE" / "aqc.sh"
DATA = REPO.parent / "shared" / "data"


def _recipe(tmp_path: Path) -> Path:
    """A recipe whose local/data.sh fails until a flag file exists, and counts its runs."""
    recipe = tmp_path / "recipe"
    (recipe / "local").mkdir(parents=True)
    wav = sorted((DATA / "fsdd" / "recordings").glob("*_theo_*.wav"))[:3]
    lines = "".join(f"theo-{i} {p}\\n" for i, p in enumerate(wav))
    texts = "".join(f"theo-{i} zero\\n" for i in range(len(wav)))
    spk = "".join(f"theo-{i} theo\\n" for i in range(len(wav)))
    (recipe / "local" / "data.sh").write_text(textwrap.dedent(f"""\
        #!/usr/bin/env bash
        set -euo pipefail
        echo run >> runs.txt
        [ -f allow ] || {{ echo "simulated failure" >&2; exit 3; }}
        mkdir -p data/all
        printf '{lines}' > data/all/wav.scp
        printf '{texts}' > data/all/text
        printf '{spk}' > data/all/utt2spk
        echo "theo $(cut -d' ' -f1 data/all/utt2spk | xargs)" > data/all/spk2utt
        """))
    (recipe / "local" / "data.sh").chmod(0o755)
    return recipe


def _run_stage1(recipe: Path):
    env = {**os.environ, "PATH": f"{Path(os.sys.executable).parent}:{os.environ['PATH']}"}
    return subprocess.run(
        ["bash", str(TEMPLATE), "--stage", "1", "--stop_stage", "1", "--pretrain_set", "all", "--finetune_set", "all",
         "--valid_set", "all", "--test_sets", "all", "--pretrain_config", "p.yaml", "--finetune_config", "f.yaml",
         "--decode_config", "d.yaml"], cwd=recipe, capture_output=True, text=True, env=env)


def test_failed_stage_leaves_no_marker_and_is_redone_then_skipped(tmp_path):
    recipe = _recipe(tmp_path)
    failed = _run_stage1(recipe)
    assert failed.returncode != 0 and "simulated failure" in failed.stderr
    assert not (recipe / "data" / ".done.1").exists()

    (recipe / "allow").touch()
    ok = _run_stage1(recipe)
    assert ok.returncode == 0, ok.stderr
    assert (recipe / "data" / ".done.1").exists()
    assert (recipe / "runs.txt").read_text().count("run") == 2
    times = (recipe / "exp" / "stage_times.tsv").read_text().splitlines()
    assert len(times) == 1 and times[0].startswith("1\tdata preparation\t")

    again = _run_stage1(recipe)
    assert again.returncode == 0
    assert "already done" in again.stderr
    assert (recipe / "runs.txt").read_text().count("run") == 2  # the finished stage did not run again


def test_missing_required_option_is_named(tmp_path):
    out = subprocess.run(["bash", str(TEMPLATE), "--stage", "1"], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode != 0
    assert "--pretrain_set is required" in out.stderr


def test_unknown_template_option_is_named(tmp_path):
    out = subprocess.run(["bash", str(TEMPLATE), "--stgae", "1"], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode != 0 and "unknown option --stgae" in out.stderr
