from gpucenter.cli.main import main

main()
