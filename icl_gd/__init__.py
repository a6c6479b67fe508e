"""icl-gd: does a pretrained transformer learn in context the way gradient descent would?"""

__version__ = "0.1.0"
