"""How the flows are deployed and served."""
