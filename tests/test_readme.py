"""The README's quickstart runs as printed and does what its comment says."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_quickstart_recovers_the_planted_ranks():
    code = re.search(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S).group(1)
    namespace: dict = {}
    exec(compile(code, "README quickstart", "exec"), namespace)
    Y, X, np = namespace["Y"], namespace["X"], namespace["np"]
    assert Y.ranks == (3, 3, 3)
    assert np.linalg.norm(Y.full() - X) <= 1e-6 * np.linalg.norm(X)


def test_ci_runs_the_readme_test_command():
    commands = re.findall(r"```bash\n(.*?)\n```", README.read_text(encoding="utf-8"), re.S)
    ci = (README.parent / ".ci" / "run").read_text(encoding="utf-8")
    assert len(commands) == 2
    assert commands[1] in ci.splitlines()
