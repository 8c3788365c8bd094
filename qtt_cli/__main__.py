from qtt_cli.cli.app import main

main()
