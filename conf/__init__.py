"""Hydra configs of recsys, shipped inside the package as ``recsys.conf`` (pyproject maps this
directory there), so installed console scripts find them: ``pkg://recsys.conf``."""
