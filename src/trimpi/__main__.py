from trimpi.cli import main

main()
