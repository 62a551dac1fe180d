from evoopt.cli import main

main()
