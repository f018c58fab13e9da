"""``python -m radpath`` runs the command line."""

from radpath.cli.main import main

main()
