"""Thin handlers named by operationId in swagger/swagger.yaml: parse, call, shape."""
