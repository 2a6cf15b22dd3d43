"""engramsim: where should an Engram table live, and what will it cost?"""

__version__ = "0.1.0"
