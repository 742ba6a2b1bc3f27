pytest_plugins = ["tests.harness.fixtures", "tests.harness.native"]
