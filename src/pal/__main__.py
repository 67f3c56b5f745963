from pal.cli.main import main

main()
