"""How frames reach the filter: test runs (unit tier), a socket, the traffic engine, the DUT's egress."""
