"""``python -m modelplex``: the same as the ``modelplex`` command."""

from modelplex.cli import main

if __name__ == "__main__":
    main()
