from fmgauge.cli import main

main()
