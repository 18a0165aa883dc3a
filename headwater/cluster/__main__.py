"""`python -m headwater.cluster --supervisor PORT --worker ID`: a LocalCluster worker process."""

from headwater.cluster.worker import main

main()
