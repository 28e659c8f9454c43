"""Progress reported inside a stage reaches the runner's console while the stage runs."""
import json

import nbformat

from spotlib import progress, reproduce


def test_reporter_writes_what_the_follower_prints(tmp_path, monkeypatch):
    path = tmp_path / "progress.jsonl"
    monkeypatch.setenv(progress.ENV_FILE, str(path))
    monkeypatch.setenv(progress.ENV_EVERY, "0")
    lines = []
    with progress.follow(path, "01_sample", print_every_s=0.05, out=lines.append):
        bar = progress.bar(total=4, desc="pre-training", unit="steps")
        assert isinstance(bar, progress.Reporter)  # under the runner: no tqdm widget
        for _ in range(3):
            bar.update(1)
            bar.set_postfix(loss="0.512", tok_s="9000")
        records = [json.loads(x) for x in path.read_text().splitlines()]
        assert records[-1]["n"] == 3 and records[-1]["total"] == 4 and records[-1]["eta_s"] is not None
        bar.close()
    text = "\n".join(lines)
    assert "[01_sample" in text and "pre-training: 3/4 steps (75%) loss=0.512 tok_s=9000" in text
    assert lines[-1].endswith("done"), lines


def test_interactive_sessions_keep_tqdm(monkeypatch):
    monkeypatch.delenv(progress.ENV_FILE, raising=False)
    assert not isinstance(progress.bar(total=2, desc="x"), progress.Reporter)


def test_follower_heartbeat_when_nothing_is_reported(tmp_path):
    lines = []
    follower = progress.Follower(tmp_path / "none.jsonl", "04_train_spot", print_every_s=0.0, heartbeat_s=0.0,
                                 out=lines.append)
    follower.poll()
    assert lines and "running" in lines[0] and "04_train_spot" in lines[0]


def test_fake_stage_progress_appears_on_the_runner_console(tmp_profile, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(progress.ENV_EVERY, "0")
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "language": "python", "display_name": "Python 3"},
                                            "language_info": {"name": "python"}})
    params = nbformat.v4.new_code_cell("profile = 'test'")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(
        "from spotlib.progress import bar\n"
        "b = bar(total=3, desc='fake work', unit='items')\n"
        "for i in range(3):\n"
        "    b.update(1); b.set_postfix(step=i)\n"
        "b.close()\n")]
    nbformat.write(nb, tmp_path / "07_fake.ipynb")
    monkeypatch.setattr(reproduce, "NOTEBOOKS", tmp_path)
    stage = reproduce.Stage("07_fake", "07_fake.ipynb", "nothing")
    seconds = reproduce.run_stage("test", tmp_profile, stage, "python3")
    out = capsys.readouterr().out
    assert seconds > 0
    assert "[07_fake" in out and "fake work: 3/3 items (100%) step=2" in out, out
    assert (tmp_profile.out / "07_fake" / "progress.jsonl").is_file()
    executed = nbformat.read(tmp_profile.out / "notebooks" / "07_fake.ipynb", as_version=4)
    assert not any("application/vnd.jupyter.widget-view+json" in o.get("data", {})
                   for c in executed.cells for o in c.get("outputs", []))
