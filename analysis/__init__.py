"""Analyst reports from campaign events: state at an instant, what-if, demand, flat rows."""
