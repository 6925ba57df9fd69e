"""jigcnn: IgNet in JAX -- pure CNN layer functions whose gradients exist twice."""

__version__ = "0.1.0"
