"""The two lifecycles every door goes through: HTTP requests and ``run()`` calls.

Each is one guard with a blocking and an asyncio form. Doors only translate between
their framework and the guard; every decision is made here or in the engine.
"""
