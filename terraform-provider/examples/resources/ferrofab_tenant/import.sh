terraform import ferrofab_tenant.neuro neuro
