"""The Campaign domain: pricing, commitments, clearing price, closing; pure Python."""
