"""Managed jobs: the job folders (registry, events, control), the supervisor and the queue.

See DESIGN.md §3 for the folder contract. Nothing here imports torch.
"""
