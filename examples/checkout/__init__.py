"""Checkout (seed 001): one `OrderCreated` event, fanned out to independent subscribers by
choreography; adding a subscriber changes nobody else."""
