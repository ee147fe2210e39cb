"""PSP adapters. ``base.Provider`` is the interface; ``stripe.StripeProvider`` talks to real
Stripe or to our sandbox through the official SDK."""
