"""/openapi.json: OpenAPI 3.1 generated from the operation table and the pydantic models,
served behind the bearer token, consistent with what the routes answer."""

from __future__ import annotations

from jsonschema import Draft202012Validator

SEED_ENDPOINTS = {
    ("post", "/api/v1/experiments/"), ("post", "/api/v1/experiments/{id}/start"),
    ("post", "/api/v1/experiments/{id}/stop"), ("get", "/api/v1/experiments/"), ("get", "/api/v1/experiments/{id}"),
    ("delete", "/api/v1/experiments/{id}"), ("post", "/api/v1/experiments/get-variant"),
    ("post", "/api/v1/experiments/record-result"), ("get", "/api/v1/experiments/{id}/analyze"),
    ("get", "/api/v1/experiments/{id}/summary"), ("post", "/api/v1/experiments/get-variant/batch"),
}


def validator(document: dict, component: str) -> Draft202012Validator:
    return Draft202012Validator({"$ref": f"#/components/schemas/{component}", "components": document["components"]})


async def test_the_document_describes_every_endpoint_with_its_models_and_status_codes(rest_api) -> None:
    async with rest_api() as api:
        served = await api.http.get("/openapi.json")
        assert served.status_code == 200 and served.headers["content-type"] == "application/json"
        doc = served.json()
        assert (await api.http.get("/openapi.json")).content == served.content  # built once, at startup

    assert doc["openapi"] == "3.1.0"
    assert doc["security"] == [{"bearerAuth": []}]
    assert doc["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http", "scheme": "bearer", "description": doc["components"]["securitySchemes"]["bearerAuth"]["description"]}
    operations = {(m, p): op for p, item in doc["paths"].items() for m, op in item.items()}
    assert set(operations) == SEED_ENDPOINTS
    for (method, path), op in operations.items():
        codes = set(op["responses"])
        assert {"401", "422", "429"} <= codes, (method, path)
        assert codes & {"200", "201"}, (method, path)
        if "{id}" in path:
            assert "404" in codes and op["parameters"][0]["name"] == "id" and op["parameters"][0]["in"] == "path"
        if "requestBody" in op:
            assert {"400", "413"} <= codes
            assert op["requestBody"]["content"]["application/json"]["schema"]["$ref"].startswith("#/components/schemas/")
        for code, response in op["responses"].items():
            if code[0] in "45":
                assert response["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorBody"}
    create = operations[("post", "/api/v1/experiments/")]
    assert set(create["responses"]) >= {"201", "400", "409", "422"} and "Location" in create["responses"]["201"]["headers"]
    assert set(operations[("post", "/api/v1/experiments/record-result")]["responses"]) >= {"200", "201", "409"}
    stop = {p["name"]: p for p in operations[("post", "/api/v1/experiments/{id}/stop")]["parameters"]}
    assert stop["winner"]["schema"]["type"] == "string" and not stop["winner"]["required"]
    listing = {p["name"]: p for p in operations[("get", "/api/v1/experiments/")]["parameters"]}
    assert listing["status"]["schema"]["type"] == "array" and listing["limit"]["schema"]["maximum"] == 200

    for schema in doc["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)  # every model schema is valid JSON Schema 2020-12
    create_schema = validator(doc, "ExperimentCreate")
    assert create_schema.is_valid(create["requestBody"]["content"]["application/json"]["example"])
    assert create_schema.is_valid({"key": "k", "name": "n", "type": "ui", "primary_metric": "conversion"})  # shorthand
    assert not create_schema.is_valid({"key": "k", "name": "n", "type": "ui", "primary_metric": "x", "extra": 1})
    assert validator(doc, "GetVariantRequest").is_valid(doc["components"]["schemas"]["GetVariantRequest"]["examples"][0])


async def test_real_answers_validate_against_the_documented_schemas(rest_api) -> None:
    async with rest_api() as api:
        doc = (await api.http.get("/openapi.json")).json()
        await api.create_running("checkout-1step", secondary_metrics=["revenue"])
        assignment = await api.http.post("/api/v1/experiments/get-variant",
                                         json={"experiment": "checkout-1step", "user_id": "u-1"})
        recorded = await api.http.post("/api/v1/experiments/record-result", json={
            "experiment": "checkout-1step", "user_id": "u-1", "metric": "revenue", "value": 12.5})
        analysis = await api.http.get("/api/v1/experiments/checkout-1step/analyze", params={"source": "registry"})
        detail = await api.http.get("/api/v1/experiments/1", params={"include_change_log": True})
        error = await api.http.get("/api/v1/experiments/missing")
    for answer, component in [(assignment, "VariantAssignment"), (recorded, "ResultRecorded"),
                              (analysis, "PostgresExperimentAnalysis"), (detail, "ExperimentDetail"), (error, "ErrorBody")]:
        errors = [e.message for e in validator(doc, component).iter_errors(answer.json())]
        assert not errors, (component, errors)


async def test_analyze_documents_the_engine_first_and_the_registry_view_as_secondary(rest_api) -> None:
    async with rest_api() as api:  # the document does not depend on where the intelligence server runs
        doc = (await api.http.get("/openapi.json")).json()
    analyze = doc["paths"]["/api/v1/experiments/{id}/analyze"]["get"]
    params = {p["name"]: p["schema"] for p in analyze["parameters"]}
    assert params["source"]["enum"] == ["intelligence", "registry"] and params["source"]["default"] == "intelligence"
    assert {"alpha", "mde", "sequential", "multiple_testing", "cuped"} <= set(params) and "record_decision" not in params
    source = next(p for p in analyze["parameters"] if p["name"] == "source")
    assert "descriptive only" in source["description"] and "no verdict" in source["description"]
    assert analyze["responses"]["200"]["content"]["application/json"]["schema"] == {"anyOf": [
        {"$ref": "#/components/schemas/IntelligenceExperimentAnalysis"},
        {"$ref": "#/components/schemas/PostgresExperimentAnalysis"}]}
