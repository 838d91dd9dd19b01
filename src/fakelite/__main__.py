from fakelite.cli import main

main()
