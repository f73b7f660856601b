"""Policy datasets: records, policies, and their builders (ClevrPolicy, GTAPolicy)."""
