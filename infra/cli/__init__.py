"""The `groupbuy` command for people: parsing, printing, exit codes; a module a group."""
