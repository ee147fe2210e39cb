"""The notifications component: webhook endpoints, email and Slack, per user preferences."""
