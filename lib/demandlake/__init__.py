"""demandlake: mine e-commerce users' latent demand from their logs, at cluster scale."""

__version__ = "0.1.0"
