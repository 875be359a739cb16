"""`groupbuy demo`: every service, one campaign, simulated sites, shown live."""
