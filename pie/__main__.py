"""`python -m pie`: the same CLI as the `pie` command."""

from pie.cli import main

if __name__ == "__main__":
    main()
