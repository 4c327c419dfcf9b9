from convergiod.cli.main import main

main()
