"""`python -m minitron` and the `minitron` command. The command line is imported inside the entry point, under
`signals.starting`, so that Ctrl-C while it loads (jsonargparse, then torch) is one line, not a traceback."""
from minitron.signals import starting


def entry() -> None:
    with starting():
        from minitron.cli import main
    main()


if __name__ == "__main__":
    entry()
