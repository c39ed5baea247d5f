from tabtrack.cli import main

main()
