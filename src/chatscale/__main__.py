"""``python -m chatscale``: the ``chatscale`` command."""

from chatscale.cli import main

if __name__ == "__main__":
    main()
