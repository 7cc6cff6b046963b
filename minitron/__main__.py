"""`python -m minitron` and the `minitron` command. The command line is imported inside the entry point, so that
Ctrl-C while it loads (jsonargparse, then torch) is one line, not a traceback."""
import sys


def entry() -> None:
    try:
        from minitron.cli import main
    except KeyboardInterrupt:
        print("minitron: interrupted", file=sys.stderr)
        sys.exit(130)
    main()


if __name__ == "__main__":
    entry()
