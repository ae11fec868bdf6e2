"""Train an in-domain dual encoder on a product catalogue and export it like any other model."""
