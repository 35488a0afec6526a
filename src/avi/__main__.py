"""``python -m avi`` runs the command line (also under torchrun)."""

from avi.cli import main

main()
