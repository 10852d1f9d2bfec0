"""Allow ``python -m sklearn_hypothesaes``."""

from sklearn_hypothesaes.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
