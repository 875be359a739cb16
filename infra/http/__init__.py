"""`groupbuy serve`: the HTTP surface (docs/contract.md, "HTTP")."""
