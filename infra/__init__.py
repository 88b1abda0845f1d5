"""What flows run on: the local stack (Prefect server, worker, Ray head) and KubeRay manifests."""
