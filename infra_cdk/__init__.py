"""The CDK app that deploys Clearline, built from `clearline.topology.TOPOLOGY`."""
