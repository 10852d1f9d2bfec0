import subprocess
import sys

import pytest

from sklearn_hypothesaes import __version__
from sklearn_hypothesaes.cli import main


def test_version_flag(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"hypothesaes {__version__}"


def test_no_command_prints_help(capsys):
    assert main([]) == 0
    assert "hypotheses" in capsys.readouterr().out


def test_python_dash_m_entry_point():
    proc = subprocess.run(
        [sys.executable, "-m", "sklearn_hypothesaes", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert proc.stdout.strip() == f"hypothesaes {__version__}"


def test_unknown_option_fails(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--no-such-option"])
    assert exc.value.code == 2
