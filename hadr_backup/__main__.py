from hadr_backup.cli.main import main

main()
