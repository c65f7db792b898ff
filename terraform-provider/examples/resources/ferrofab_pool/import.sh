terraform import ferrofab_pool.fast fast-1
