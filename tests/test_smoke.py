def test_root_selects_one_through_the_pool(client):
    r = client.get("/")
    assert r.status_code == 200
    assert r.json() == [[1]]
