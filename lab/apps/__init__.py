"""Small workloads the lab and the tests run: HTTP backend app, loopback test servers."""
