"""Run the engramsim CLI from a checkout: `python cli.py ...` equals the installed `engramsim ...`."""

from engramsim.cli import main

if __name__ == "__main__":
    main()
