from segcli.cli.app import main

main()
