from fedresponse.cli import main

main()
