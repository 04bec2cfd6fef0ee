from worker.cli import entrypoint

entrypoint()
